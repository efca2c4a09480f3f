"""The base of every meme spider: the arguments they share and how they reach the pipelines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider, UsageError
from scrapy.settings import BaseSettings

from emomo.addon import setting_defaults
from emomo.config import EmomoConfig
from emomo.errors import SourceUnreadable
from emomo.ingest.runtime import IngestRuntime, config_from_settings
from emomo.logmask import SecretMask
from emomo.sharding import Shard

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def flag(name: str, value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise UsageError(f"-a {name}={value}: expected 1 or 0")


def positive_int(name: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise UsageError(f"-a {name}={value}: expected a positive whole number")
    return number


def positive_setting(settings: BaseSettings, name: str, zero: str = "") -> int:
    """A Scrapy setting that must be a positive whole number (0 would stall the crawl), or 0
    where ``zero`` says what 0 means."""
    try:
        value = settings.getint(name)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not zero):
        allowed = f"0 ({zero}) or a positive whole number" if zero else "a positive whole number"
        raise UsageError(f"{name} must be {allowed}, got {settings.get(name)}")
    return value


def text(name: str, value: Any) -> str:
    return "" if value is None else str(value)


def choice(*allowed: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in allowed:
            raise UsageError(f"-a {name}={value}: expected {' or '.join(allowed)}")
        return str(value)
    return parse


@dataclass(frozen=True)
class Argument:
    """A spider argument (``-a name=value``), declared once: its parser makes the attribute
    ``attr`` (the name unless said) and refuses a bad value in one line."""

    name: str
    metavar: str
    help: str
    parse: Callable[[str, Any], Any] = text
    default: Any = None
    attr: str = ""


#: the finish reason of a crawl whose source held entries but none it could take (exit code 1)
NOTHING_USABLE = "nothing_usable"
#: the finish reason of a crawl whose source could not be reached at all (exit code 1)
SOURCE_UNREACHABLE = "source_unreachable"
#: the finish reason of a crawl whose source could not be read (exit code 2, as a refused start)
SOURCE_UNREADABLE = "source_unreadable"


class MemeSpider(scrapy.Spider):
    """The arguments every meme spider takes are ``arguments``; a spider adds its own. An
    argument no spider declares is refused (a misspelt ``-a limt=3`` would else be ignored);
    those starting with ``_`` are the scheduler's (scrapyd's ``_job``)."""

    config: EmomoConfig
    mask: SecretMask
    embedding: str
    limit: int | None
    force: bool

    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("embedding", "NAME", "the embedding configuration to write (local, jina, qwen3 or one of "
                                      "the config file's; default: the one marked is_default)"),
        Argument("limit", "N", "at most N items", positive_int),
        Argument("force", "1", "embed again what the collection already holds", flag),
    )
    #: file-based spiders: this worker's share of the source (emomo.sharding)
    SHARD = Argument("shard", "K/N", "take only share K of N of the source (N workers, one each)",
                     lambda name, value: Shard.parse(value))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        declared = {a.name: a for a in self.arguments}
        unknown = sorted(k for k in kwargs if k not in declared and not k.startswith("_"))
        if unknown:
            raise UsageError(f"unknown argument -a {unknown[0]}=… for spider {self.name} "
                             f"(known: {', '.join(declared)}; scrapy args {self.name} tells what each does)")
        for argument in declared.values():
            setattr(self, argument.attr or argument.name,
                    argument.parse(argument.name, kwargs.pop(argument.name, argument.default)))
        super().__init__(*args, **kwargs)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        # Spider arguments reach the pipelines as settings: they are still
        # writable here, before the crawler freezes them.
        if spider.embedding:
            crawler.settings.set("EMOMO_EMBEDDING", spider.embedding, priority="spider")
        if spider.force:
            crawler.settings.set("EMOMO_FORCE", True, priority="spider")
        spider.configure(crawler.settings)
        # Scrapy installs its root log handler again after building the spider: mask that one.
        crawler.signals.connect(spider.mask.install, signal=signals.engine_started)
        return spider

    def configure(self, settings: BaseSettings) -> None:
        """Load the config and check the arguments against it: an unknown
        embedding, a missing key or a missing folder fails in the first second."""
        positive_setting(settings, "CONCURRENT_ITEMS")
        positive_setting(settings, "EMOMO_MAX_ITEMS_IN_FLIGHT", zero="sized to the describer")
        self.config = config_from_settings(settings)
        self.mask = SecretMask(self.config.secrets()).install()
        shard = getattr(self, "shard", None)
        if shard is not None and self.config.database.driver == "sqlite":
            # Workers on several machines (or processes) must see each other's memes.
            raise UsageError(f"-a shard={shard}: the workers of a shared crawl need one database, and "
                             "database.driver is sqlite (a file of one machine): set database.driver: postgres "
                             "and DATABASE_URL")
        self.config.embedding(self.embedding or settings.get("EMOMO_EMBEDDING") or None)
        self.setup()

    @classmethod
    def preflight(cls, settings: BaseSettings, arguments: dict[str, Any]) -> None:
        """What ``configure`` checks (the arguments against the config), before any crawler
        exists: ``scrapy crawl`` calls it so that these errors print one line. What only the
        backends can tell is checked when the crawl opens them (IngestRuntime)."""
        setting_defaults(settings)
        cls(**arguments).configure(settings)

    def setup(self) -> None:
        """Check the spider's own arguments against the config; raise UsageError to refuse."""

    def needs_backends(self) -> bool:
        """False when this crawl writes no index (a spider writing a staging folder)."""
        return True

    def runtime(self) -> IngestRuntime:
        runtime = self.crawler.get_extension(IngestRuntime)
        assert runtime is not None, "a spider that ingests has the IngestRuntime extension"
        return runtime

    def items(self) -> AsyncIterator[Any]:
        """The source's items, in order (file-based spiders implement this, not ``start``)."""
        raise NotImplementedError

    async def start(self) -> AsyncIterator[Any]:
        runtime = self.runtime()
        try:
            async for item in self.items():
                # Each item waits for room in the pipelines: memory stays flat on a big source.
                if not await runtime.admit():
                    self.logger.warning("Not reading further: %s", runtime.stop_cause or "the crawl is stopping")
                    return
                # Counted once it is handed to Scrapy: an item read but refused here is not yielded.
                self.count("yielded")
                yield item
        except SourceUnreadable as exc:
            # The check before the crawl passed; the source went away since. Nothing more can be read.
            self.logger.error("Cannot read the source: %s", exc)
            raise CloseSpider(SOURCE_UNREADABLE) from None
        assert self.crawler.stats is not None
        if not self.crawler.stats.get_value(f"emomo/{self.name}/yielded"):
            skipped = sum(int(v) for k, v in self.crawler.stats.get_stats().items()
                          if k.startswith(f"emomo/{self.name}/skipped/"))
            if skipped:
                # Every entry was refused (a manifest of bad lines, a tree of broken files):
                # whatever ran, the crawl did not do its job.
                self.logger.error("Nothing to ingest: all %d entries of the source were skipped (see above)",
                                  skipped)
                raise CloseSpider(NOTHING_USABLE)
            self.logger.warning("Nothing to ingest: the source holds no entries")
        # The whole source is read: the crawl ends when its last item does, not at Scrapy's
        # next idle check (every 5 s), which would also blur elapsed_time_seconds.
        if await runtime.drained():
            raise CloseSpider("finished")

    def mine(self, source_id: str, count: bool = True) -> bool:
        """Whether this worker takes the item (always, without ``shard``); the others are counted."""
        shard: Shard | None = getattr(self, "shard", None)
        if shard is None or shard.holds(source_id):
            return True
        if count:
            self.count("other_shard")
        return False

    def found(self, total: int) -> None:
        """How many entries the source holds for this worker: the progress line's total."""
        assert self.crawler.stats is not None
        self.crawler.stats.set_value(f"emomo/{self.name}/found", total)

    def count(self, outcome: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"emomo/{self.name}/{outcome}")

    def skip(self, kind: str, path: str, reason: str) -> None:
        """A file or line of the source not taken: said once with its place, counted by kind
        (``emomo/<spider>/skipped/<kind>``, named again in the ingest summary)."""
        self.count(f"skipped/{kind}")
        self.logger.warning("Skipped %s: %s", path, reason)
