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
        var count = request.Models.Count;
        if (request.Weights.Count != count)
        {
            throw new ArgumentException(
                $"{strategy}: tensor '{request.TensorName}' has {count} models but {request.Weights.Count} weights", nameof(request));
        }
        if (count < traits.MinModels)
        {
            throw new ArgumentException(
                $"{strategy}: tensor '{request.TensorName}' needs at least {traits.MinModels} model(s) besides the base, got {count}", nameof(request));
        }
        if (traits.MaxModels is { } max && count > max)
        {
            throw new ArgumentException(
                $"{strategy}: tensor '{request.TensorName}' accepts at most {max} model(s) besides the base, got {count}", nameof(request));
        }
        if (traits.RequiresBaseModel && request.Base is null)
        {
            throw new ArgumentException($"{strategy}: tensor '{request.TensorName}' needs a base model (set base_model)", nameof(request));
        }
        for (var i = 0; i < count; i++)
        {
            if (!double.IsFinite(request.Weights[i]))
            {
                throw new ArgumentException(
                    $"{strategy}: weight of model '{NameOf(request, i)}' for tensor '{request.TensorName}' is not finite ({request.Weights[i]})", nameof(request));
            }
        }
        return request.Base;
    }

    /// <summary>The model's display name for messages.</summary>
    public static string NameOf(MergeTensorRequest request, int model)
    {
        ArgumentNullException.ThrowIfNull(request);
        return model < request.ModelNames.Count ? request.ModelNames[model] : $"#{model}";
    }

    /// <summary>A per-model float parameter checked against an inclusive range.</summary>
    public static double FloatInRange(MergeTensorRequest request, string strategy, string name, int model, double min, double max)
    {
        ArgumentNullException.ThrowIfNull(request);
        return FloatInRange(request.Parameters, strategy, name, model, NameOf(request, model), request.TensorName, min, max);
    }

    /// <summary>A per-model float parameter checked against an inclusive range (the names are for the message).</summary>
    public static double FloatInRange(ResolvedParameters parameters, string strategy, string name, int model, string modelName, string tensorName, double min, double max)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var value = parameters.Float(name, model);
        if (!(value >= min && value <= max))
        {
            throw new ArgumentOutOfRangeException(
                nameof(parameters),
                $"{strategy}: parameter '{name}' of model '{modelName}' for tensor '{tensorName}' is {value}, outside [{min}, {max}]");
        }
        return value;
    }
}
