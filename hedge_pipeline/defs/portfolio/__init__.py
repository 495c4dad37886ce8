"""The portfolio area: the ``portfolio_selection`` asset over every weekly code's features."""
