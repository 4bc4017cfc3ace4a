//! Look-aside cache for product and sale details in Redis (filled by the catalog helper).

use dropline_core::config::CacheConfig;
use dropline_core::redis::Redis;

#[derive(Debug)]
pub struct Cache {
    #[allow(dead_code)]
    redis: Redis,
    #[allow(dead_code)]
    config: CacheConfig,
}

impl Cache {
    pub fn new(redis: Redis, config: &CacheConfig) -> Self {
        Self {
            redis,
            config: config.clone(),
        }
    }
}
