"""What people look at: HTML pages rendered from the jinja2 templates in ``templates/`` (:mod:`.pages`) and the
pictures embedded in them (:mod:`.pictures`). The folders that hold them are :mod:`neuralcleanse.store`'s."""
