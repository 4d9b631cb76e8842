"""The wsinspect recorder as a mitmproxy script:

    mitmdump -s addons/wsinspect.py --set wsinspect_capture=cap.db
    wsinspect report cap.db

It records with the same code as `wsinspect` itself, and adds the commands `wsinspect.resend`
and `wsinspect.inject` (see wsinspect/resend.py). When the wsinspect package is not
installed, it is imported from the checkout this file lives in.
"""

import sys
from pathlib import Path

try:
    from wsinspect.recorder import Recorder
    from wsinspect.resend import Resender
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wsinspect.recorder import Recorder
    from wsinspect.resend import Resender

recorder = Recorder()
addons = [recorder, Resender(recorder)]
