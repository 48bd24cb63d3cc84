"""Demo DLU records (fictitious persons) posted by ``dui-gateway demo``."""
