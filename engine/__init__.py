"""The heart: the Plan model, its validator and the engine that runs it on Prefect. No CLI or UI here."""
