"""pretrade.market"""
