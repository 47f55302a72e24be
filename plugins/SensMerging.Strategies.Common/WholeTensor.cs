using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Runs a streaming strategy's block protocol over a whole tensor given as one block, so a strategy's
/// <see cref="IMergeStrategy.Merge"/> and its streamed merge are one piece of code and give the same bits.
/// </summary>
public static class WholeTensor
{
    /// <summary>What a session needs to know about the tensor of <paramref name="request"/>.</summary>
    public static MergeTensorInfo Info(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return new MergeTensorInfo
        {
            TensorName = request.TensorName,
            LayerGroup = request.LayerGroup,
            ModelLayerGroups = request.ModelLayerGroups,
            Shape = request.Output.shape,
            HasBase = request.Base is not null,
            ModelNames = request.ModelNames,
            Weights = request.Weights,
            Parameters = request.Parameters,
            Seed = request.TensorSeed != 0 ? request.TensorSeed : request.Seed,
            LayerIndex = request.LayerIndex,
            LayerCount = request.LayerCount,
            ComputeDType = request.ComputeDType,
        };
    }

    /// <summary>Starts a session for the request's tensor and runs it over the request as its one block.</summary>
    public static void Merge(IStreamingMergeStrategy strategy, MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(request);
        using var session = strategy.BeginTensor(Info(request));
        Run(session, request);
    }

    /// <summary>
    /// The <see cref="IMergeStrategy.Merge"/> of a streaming strategy that reproduces mergekit's half-precision arithmetic
    /// on whole tensors: a request whose compute dtype is bfloat16 or float16 is checked and handed to
    /// <paramref name="inComputeDType"/>; any other runs the block protocol over the whole tensor.
    /// </summary>
    public static void Merge(IStreamingMergeStrategy strategy, MergeTensorRequest request, Action<MergeTensorRequest> inComputeDType)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(inComputeDType);
        if (request.ComputesInHalfPrecision)
        {
            RequestChecks.Check(request, strategy.Name, strategy.Traits);
            inComputeDType(request);
            return;
        }
        Merge(strategy, request);
    }

    /// <summary>Every statistics pass of <paramref name="session"/> over the one block, then the merge of it.</summary>
    public static void Run(ITensorMergeSession session, MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(request);
        for (var pass = 0; session.BeginPass(pass); pass++)
        {
            session.Observe(request);
        }
        session.Merge(request);
    }
}
