using Microsoft.Extensions.Logging;

namespace SensMerging.Strategies.Common;

/// <summary>What the task-arithmetic family tells the user about a merge (source-generated messages).</summary>
internal static partial class TaskArithmeticLog
{
    /// <summary>Logs every model whose task vector of the tensor Breadcrumbs drops because the tensor is too small for gamma.</summary>
    public static void SmallTensorDrops(ILogger logger, TaskArithmeticVariant variant, TaskArithmeticSettings settings, long numel, string tensorName, IReadOnlyList<string> modelNames)
    {
        if (variant.Sparsification != SparsificationMethod.MagnitudeOutliers || !logger.IsEnabled(LogLevel.Information))
        {
            return;
        }
        for (var i = 0; i < settings.Weights.Length; i++)
        {
            if (settings.DropsSmallTensor(variant, i, numel))
            {
                SmallTensorDropped(logger, variant.Name, tensorName, numel, settings.Gammas[i], i < modelNames.Count ? modelNames[i] : $"#{i}");
            }
        }
    }

    [LoggerMessage(EventId = 2101, Level = LogLevel.Information,
        Message = "{Method}: tensor {Tensor} has {Elements} elements, so gamma {Gamma} removes no outlier there and (as in mergekit) the whole task vector of {Model} for this tensor is dropped")]
    private static partial void SmallTensorDropped(ILogger logger, string method, string tensor, long elements, double gamma, string model);
}
