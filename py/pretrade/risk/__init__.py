"""pretrade.risk"""
