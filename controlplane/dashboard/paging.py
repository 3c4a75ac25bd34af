"""Keyset pagination for the dashboard's lists: see :mod:`controlplane.keyset`."""

from controlplane.keyset import DEFAULT_PAGE_SIZE, Page, decode, encode, merged_page, page

__all__ = ["DEFAULT_PAGE_SIZE", "Page", "decode", "encode", "merged_page", "page"]
