"""The models-from-code entry point of every registered pyfunc (``registry.pyfunc.package``).

MLflow copies this file into each version and runs it when the version is loaded; the model
it sets is :class:`~hedge_pipeline.registry.pyfunc.HedgePyfunc`, imported from the installed
package, so a version holds no pickled code.
"""

from mlflow.models import set_model

from hedge_pipeline.registry.pyfunc import HedgePyfunc

set_model(HedgePyfunc())
