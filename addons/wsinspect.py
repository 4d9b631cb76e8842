"""The wsinspect recorder as a mitmproxy script:

    mitmdump -s addons/wsinspect.py --set wsinspect_capture=cap.db
    wsinspect report cap.db

It records with the same code as `wsinspect` itself (but relays WebSockets through
mitmproxy's own WebSocket layer unless `--set wsinspect_relay=raw`), adds the commands
`wsinspect.resend` and `wsinspect.inject` (see wsinspect/resend.py), holds messages in flight
(`--set wsinspect_intercept=RULE`, `wsinspect.forward`/`edit`/`drop`: wsinspect/interceptor.py),
and refuses any destination that is the proxy itself, however it is spelled
(wsinspect/loopguard.py). When the wsinspect package is not installed, it is imported from the
checkout this file lives in.

In reverse mode, mitmproxy rewrites Host to the target before any addon sees the request;
add `--set keep_host_header=true` to record (and pass on) the Host the client sent. The
recorder warns when it is missing.
"""

import sys
from pathlib import Path

try:
    from wsinspect.interceptor import Interceptor
    from wsinspect.loopguard import LoopGuard
    from wsinspect.recorder import Recorder
    from wsinspect.resend import Resender
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wsinspect.interceptor import Interceptor
    from wsinspect.loopguard import LoopGuard
    from wsinspect.recorder import Recorder
    from wsinspect.resend import Resender

# mitmproxy's own WebSocket path by default, so mitmproxy's views and other addons' message
# hooks still see messages; `--set wsinspect_relay=raw` opts into the raw relay.
recorder = Recorder(relay="mitmproxy")
# the interceptor before the recorder: a held message is recorded once it is decided
addons = [LoopGuard(), Interceptor(recorder), recorder, Resender(recorder)]
