"""Meme spiders: they parse their source and yield MemeItems; the pipelines do the rest."""
