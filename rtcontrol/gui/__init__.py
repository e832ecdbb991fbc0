"""The console window (PySide6 + pyqtgraph over qasync): dock panels that view a console controller."""
