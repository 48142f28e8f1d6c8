"""Guards: input scanning, the injection classifier, output scanning, system-prompt protection."""
