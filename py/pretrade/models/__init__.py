"""pretrade.models"""
