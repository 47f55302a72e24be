using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// One Gram matrix (sums of products of K vectors, double) per segment of a tensor, for strategies whose statistic is
/// per row or per column rather than per tensor (model_stock's filter_wise, nuslerp without flattening). The segment of
/// an element is a function of its position in the whole tensor, so blocks may start and end anywhere. Correct rather
/// than fast: each block is copied to float32 arrays.
/// </summary>
public sealed class SegmentedGram
{
    private readonly int _k;
    private readonly Func<long, long> _segmentOf;
    private readonly double[] _sums;

    /// <param name="vectors">K, the number of vectors.</param>
    /// <param name="segments">How many segments the tensor has.</param>
    /// <param name="segmentOf">The segment of the element at a position of the whole tensor.</param>
    public SegmentedGram(int vectors, long segments, Func<long, long> segmentOf)
    {
        ArgumentNullException.ThrowIfNull(segmentOf);
        _k = vectors;
        _segmentOf = segmentOf;
        _sums = new double[checked(segments * vectors * vectors)];
        Segments = segments;
    }

    /// <summary>Number of segments.</summary>
    public long Segments { get; }

    /// <summary>
    /// Adds a block: <paramref name="vectors"/>[i] holds elements <c>[start, start + n)</c> of vector i; <paramref name="origin"/>
    /// (or null) is subtracted from each (in float32, as the merge does).
    /// </summary>
    public void Add(IReadOnlyList<Tensor> vectors, Tensor? origin, long start)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        var values = vectors.Select(Floats).ToArray();
        var offset = origin is null ? null : Floats(origin);
        var v = new double[_k];
        for (var e = 0; e < values[0].Length; e++)
        {
            for (var i = 0; i < _k; i++)
            {
                v[i] = offset is null ? values[i][e] : values[i][e] - offset[e];
            }
            var cell = _segmentOf(start + e) * _k * _k;
            for (var i = 0; i < _k; i++)
            {
                for (var j = 0; j < _k; j++)
                {
                    _sums[cell + (i * _k) + j] += v[i] * v[j];
                }
            }
        }
    }

    /// <summary>The sum of products of vectors <paramref name="i"/> and <paramref name="j"/> in segment <paramref name="segment"/>.</summary>
    public double Sum(long segment, int i, int j) => _sums[(segment * _k * _k) + (i * _k) + j];

    /// <summary>Per element of a block, the value of its segment from <paramref name="perSegment"/>, as a tensor shaped like <paramref name="like"/>.</summary>
    public Tensor Expand(IReadOnlyList<double> perSegment, long start, Tensor like)
    {
        ArgumentNullException.ThrowIfNull(perSegment);
        ArgumentNullException.ThrowIfNull(like);
        var n = like.numel();
        var values = new float[n];
        for (long e = 0; e < n; e++)
        {
            values[e] = (float)perSegment[(int)_segmentOf(start + e)];
        }
        return torch.tensor(values).to(like.dtype, like.device).view(like.shape);
    }

    private static float[] Floats(Tensor tensor)
    {
        using var copy = tensor.to(ScalarType.Float32, CPU).contiguous();
        return copy.data<float>().ToArray();
    }
}
