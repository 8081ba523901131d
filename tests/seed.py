"""Seed 000's optimization_config example, line for line, as a user fills it
(the tests that configure optimize() the way the seed shows use this one copy)."""


def seed_config(batch_size=512, slot_num=26, max_nnz=10):
    import tiacc_tf

    optimization_config = tiacc_tf.OptimizeConfig()
    optimization_config.parameter_map["tiemb/max_batch_size"].i = batch_size
    optimization_config.parameter_map["tiemb/slot_num"].i = slot_num
    optimization_config.parameter_map["tiemb/max_nnz"].i = max_nnz
    optimization_config.parameter_map["tiemb/cache_percentage"].f = 0.2
    optimization_config.parameter_map["tiemb/cpu_cache_percentage"].f = 1.0
    optimization_config.parameter_map["tiemb/hit_rate_threshold"].f = 0.95
    optimization_config.parameter_map["tiemb/enable_distributed"].b = False
    return optimization_config
