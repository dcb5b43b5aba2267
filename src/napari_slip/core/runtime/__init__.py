"""How the engine runs: progress events, generator helpers, speed, on-disk caches."""
