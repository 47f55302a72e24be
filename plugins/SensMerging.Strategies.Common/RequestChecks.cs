using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>Argument checks every strategy runs on a request before touching tensors.</summary>
public static class RequestChecks
{
    /// <summary>Checks model/weight counts against the traits and returns the base tensor (null when not required).</summary>
    public static Tensor? Check(MergeTensorRequest request, string strategy, StrategyTraits traits)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckCounts(strategy, traits, request.TensorName, request.Models.Count, request.Weights, request.Base is not null, i => NameOf(request, i), nameof(request));
        return request.Base;
    }

    /// <summary>The same checks for a tensor about to be streamed (<see cref="IStreamingMergeStrategy.BeginTensor"/>).</summary>
    public static void Check(MergeTensorInfo tensor, string strategy, StrategyTraits traits)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckCounts(strategy, traits, tensor.TensorName, tensor.ModelNames.Count, tensor.Weights, tensor.HasBase,
            i => i < tensor.ModelNames.Count ? tensor.ModelNames[i] : $"#{i}", nameof(tensor));
    }

    private static void CheckCounts(
        string strategy, StrategyTraits traits, string tensorName, int count, IReadOnlyList<double> weights, bool hasBase, Func<int, string> modelName, string argument)
    {
        if (weights.Count != count)
        {
            throw new ArgumentException($"{strategy}: tensor '{tensorName}' has {count} models but {weights.Count} weights", argument);
        }
        if (traits.CountProblems(strategy, hasBase, count) is { Count: > 0 } problems)
        {
            throw new ArgumentException($"tensor '{tensorName}': {problems[0]}", argument);
        }
        for (var i = 0; i < count; i++)
        {
            if (!double.IsFinite(weights[i]))
            {
                throw new ArgumentException(
                    $"{strategy}: weight of model '{modelName(i)}' for tensor '{tensorName}' is not finite ({weights[i]})", argument);
            }
        }
    }

    /// <summary>The model's display name for messages.</summary>
    public static string NameOf(MergeTensorRequest request, int model)
    {
        ArgumentNullException.ThrowIfNull(request);
        return model < request.ModelNames.Count ? request.ModelNames[model] : $"#{model}";
    }
}
