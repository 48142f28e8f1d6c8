"""The upstream simulator (`bastion sim`): a fake OpenAI/Anthropic upstream for tests, demos and benchmarks."""
