"""The failproject spiders."""
