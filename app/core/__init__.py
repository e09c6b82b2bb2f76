"""Qt-free logic shared by the CLI, the GUI and the tests.

Nothing under ``app.core`` may import Qt: every pipeline must run headless.
"""
