"""Alerting: operational events queued, routed to channels by rules, grouped, and delivered."""
