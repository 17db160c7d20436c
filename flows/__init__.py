"""Prefect flows a person runs or deploys. Thin: they wire agents, tools and the engine together."""
