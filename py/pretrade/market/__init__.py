"""pretrade.market: the market simulator, its scenarios, the feed handler and replay.

    from pretrade.market.simulator import simulate, Simulation
    res = simulate("flash-crash", seed=7, syms=["ESZ6", "ACME"], duration="30m", at=900)
    res["quote"], res["trade"], res["book"], res["l3"]      # DataFrames in the schema's columns
    res.labels["stress"], res.labels["metaorders"]          # ground truth
    for table, rows in Simulation("normal", 1).stream(): ...  # the same, block by block

Modules: book (matching engine), tape (quotes and book snapshots of a book), instruments,
simulator, scenarios (`pretrade scenario`), orderflow (the firm's own orders, fat-finger),
replay (recorded L3/L2 data), feed (`pretrade feed`).
"""
