"""pretrade.gateway"""
