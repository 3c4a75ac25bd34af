"""The project's spiders. ``BaseSpider`` and ``SharedSpider`` are bases, not runnable spiders."""
