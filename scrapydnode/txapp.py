"""The twistd application file of a node: Scrapyd, configured from ./scrapyd.conf above all.

Scrapyd's own txapp lets ``~/.scrapyd.conf`` or a stray ``scrapy.cfg`` override the node's file;
here the node's file is read last, so it wins.
"""

import os

from scrapyd import get_application
from scrapyd.config import Config

application = get_application(Config(extra_sources=[os.path.abspath("scrapyd.conf")]))
