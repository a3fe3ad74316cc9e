"""The gradcheck-kit autograder: grades notebooks of backward functions.

Student code runs only in a separate, resource-limited worker process (see
:mod:`autograder.sandbox`); cases are generated and judged in the grader. The
pipeline is :func:`autograder.grade.grade_submission`; the command line is
``gradcheck-grade`` (:mod:`autograder.cli`).
"""
