"""The HDF5 feature store: shards of per-frame features with their provenance (docs/cache.md, "Shard format").

Read with `cache.reader` (`load_cache`, `FeatureDataset`), write with `cache.store` (`write_shard`,
`list_shards`). Nothing is imported here: every pipeline module writes files through `cache.files`,
which runs this file first, so whatever it imported would be a code dependency of every stage
(`pipeline/registry.py`)."""
