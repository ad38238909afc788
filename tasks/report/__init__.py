"""Rendering: one drill's report (terminal, Markdown), Slack Block Kit, the HTML page and its charts. Rendering never sends."""
