"""The addon script a network manager can pass to mitmdump directly:

    mitmdump -s addons/schoolproxy_addons.py --set schoolproxy_config=config/schoolproxy.yaml

(``schoolproxy run`` does the same, faster, with a lean master.) All logic lives in the package.
Not named schoolproxy.py: mitmdump puts this folder on sys.path, and that name would hide the package.
"""

import os

from schoolproxy.private import UMASK
from schoolproxy.proxy import make_addons

os.umask(UMASK)  # records, spool, CA and list cache private to the service (as `schoolproxy run` does)
addons = make_addons()
