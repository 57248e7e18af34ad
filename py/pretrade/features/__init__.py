"""pretrade.features"""
