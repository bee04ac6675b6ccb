"""The pipeline's stages, one module each with one entry ``run(exp, upstream, workdir) -> artifact``:
data -> train -> evaluate -> predict -> search -> track -> export. ``pipeline`` composes them,
``artifacts`` names every file they write, ``runs`` finds a finished run again."""
