"""The base every ccxt-backed venue plugin builds on, split by concern: the venue class,
error translation, transport, rate limits, caches and offline replay."""
