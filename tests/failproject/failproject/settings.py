"""Settings of the failproject test project: no network side effects, no open ports."""

BOT_NAME = "failproject"
SPIDER_MODULES = ["failproject.spiders"]
NEWSPIDER_MODULE = "failproject.spiders"

# Both open a port that runs code inside the crawl (Scrapy 2.19 enables them by default).
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
EXTENSIONS = {
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.remote_control.RemoteControl": None,
}
ROBOTSTXT_OBEY = False
LOG_LEVEL = "INFO"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
