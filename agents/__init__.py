"""Who thinks: the model layer (providers, embedded llama.cpp, scripted test model) and the agent registry."""
