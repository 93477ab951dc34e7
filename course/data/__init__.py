"""Data files shipped with the course package (see ``sentiment/DATA_CARD.md``)."""
