"""The flash-crash story end to end: the firm's strategies over FIX against the exchange-as-market,
run with static and with dynamic limits (`pretrade scenario flash-crash`)."""
