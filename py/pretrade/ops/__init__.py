"""pretrade.ops"""
