"""pretrade.tick"""
