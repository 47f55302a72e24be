using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Scorers;

/// <summary>
/// Sums of FP32 tensors in double precision without libtorch's <c>sum(dtype: float64)</c>, which takes a scalar casting
/// path about 100x slower than its vectorised FP32 reduction: FP32 sums of 4096-element rows, added up in double. Agrees
/// with the float64 reduction to about 1e-9 relative.
/// </summary>
internal static class DoubleSums
{
    /// <summary>Row width of the FP32 partial sums.</summary>
    private const long Row = 4096;

    /// <summary>The sum of a flat (1-D, contiguous) FP32 tensor.</summary>
    public static double Total(Tensor flat)
    {
        using var scope = NewDisposeScope();
        var count = flat.numel();
        var whole = count / Row * Row;
        var total = 0.0;
        if (whole > 0)
        {
            total += flat.narrow(0, 0, whole).view(-1, Row).sum(1L).to_type(ScalarType.Float64).sum().item<double>();
        }
        if (whole < count)
        {
            total += flat.narrow(0, whole, count - whole).to_type(ScalarType.Float64).sum().item<double>();
        }
        return total;
    }

    /// <summary>The sum of each row of a contiguous 2-D FP32 tensor, in double.</summary>
    public static double[] Rows(Tensor matrix)
    {
        var rows = matrix.shape[0];
        var sums = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            using var row = matrix[r];
            sums[r] = Total(row);
        }
        return sums;
    }
}
