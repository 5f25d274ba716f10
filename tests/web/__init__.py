"""Browser tests: the web client's JavaScript driven through Playwright and Chromium."""
