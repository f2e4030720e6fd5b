"""The HDF5 feature store: shards of per-frame features with their provenance (docs/cache.md, "Shard format")."""
from cache.reader import FeatureCache, FeatureDataset, load_cache
from cache.store import FORMAT_VERSION, ShardRecord, list_shards, write_shard

__all__ = ["FORMAT_VERSION", "FeatureCache", "FeatureDataset", "ShardRecord", "list_shards", "load_cache", "write_shard"]
