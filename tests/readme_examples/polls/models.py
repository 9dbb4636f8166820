# Empty on purpose: the README's code blocks define the models, as a reader would write
# them in their own polls/models.py; the runner executes them as this module.
