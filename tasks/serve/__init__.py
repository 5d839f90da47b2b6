"""Serving: retrieval, answers, the query service, the production follower and the query log."""
