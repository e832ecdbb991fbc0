"""The console window (PySide6 + pyqtgraph over qasync): dock panels that view a console controller."""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["app", "main_window"]
