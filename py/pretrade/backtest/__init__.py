"""pretrade.backtest"""
