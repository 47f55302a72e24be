using System.Collections.Concurrent;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;

namespace SensMerging.Core.Engine;

/// <summary>What is wrong with an input's data (see <see cref="MergeDataWarning"/>).</summary>
public enum MergeDataProblem
{
    /// <summary>An input tensor holds NaN or infinite values.</summary>
    NonFinite,

    /// <summary>An input has tensors the reference model (the base, else the first model) lacks; they are not merged.</summary>
    ExtraTensors,
}

/// <summary>
/// A problem in the input data that the merge went through with (with <see cref="MergeOptions.Strict"/> it is an error,
/// <see cref="MergeDataException"/>): one per tensor and model for <see cref="MergeDataProblem.NonFinite"/> (its counts
/// summed over every block of the tensor), one per model for <see cref="MergeDataProblem.ExtraTensors"/>.
/// </summary>
/// <param name="Problem">What is wrong.</param>
/// <param name="Model">The input model's name in the plan.</param>
/// <param name="Tensors">The tensors concerned.</param>
/// <param name="Message">The problem in words.</param>
public sealed record MergeDataWarning(MergeDataProblem Problem, string Model, IReadOnlyList<string> Tensors, string Message)
{
    /// <summary>NaN values found (<see cref="MergeDataProblem.NonFinite"/>).</summary>
    public long NanCount { get; init; }

    /// <summary>Infinite values found, either sign (<see cref="MergeDataProblem.NonFinite"/>).</summary>
    public long InfCount { get; init; }

    /// <summary>Most tensor names an <see cref="MergeDataProblem.ExtraTensors"/> message lists (<see cref="Tensors"/> has them all).</summary>
    public const int ListedTensors = 10;

    internal static MergeDataWarning NonFinite(string tensor, string model, long nan, long inf, bool partial) =>
        new(MergeDataProblem.NonFinite, model, [tensor], string.Create(CultureInfo.InvariantCulture,
            $"input tensor '{tensor}' of model '{model}' holds {nan} NaN and {inf} infinite value(s){(partial ? " (found before the merge stopped)" : string.Empty)}"))
        {
            NanCount = nan,
            InfCount = inf,
        };

    internal static MergeDataWarning Extra(string model, string reference, IReadOnlyList<string> tensors)
    {
        var listed = string.Join(", ", tensors.Take(ListedTensors));
        var more = tensors.Count > ListedTensors ? string.Create(CultureInfo.InvariantCulture, $" and {tensors.Count - ListedTensors} more") : string.Empty;
        return new(MergeDataProblem.ExtraTensors, model, tensors, string.Create(CultureInfo.InvariantCulture,
            $"model '{model}' has {tensors.Count} tensor(s) that '{reference}' lacks, not merged: {listed}{more}"));
    }
}

/// <summary>
/// <see cref="MergeOptions.Strict"/>: a problem in the input data (<see cref="Warnings"/>) stopped the merge. Nothing
/// was written: the temporary output folder is removed.
/// </summary>
public sealed class MergeDataException : Exception
{
    public MergeDataException(IReadOnlyList<MergeDataWarning> warnings)
        : base(Describe(warnings))
    {
        Warnings = warnings;
    }

    public MergeDataException()
    {
    }

    public MergeDataException(string message)
        : base(message)
    {
    }

    public MergeDataException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The problems found.</summary>
    public IReadOnlyList<MergeDataWarning> Warnings { get; } = [];

    private static string Describe(IReadOnlyList<MergeDataWarning> warnings)
    {
        ArgumentNullException.ThrowIfNull(warnings);
        const string lead = "strict mode: the input data has problems, so the merge stops";
        return warnings.Count == 1
            ? $"{lead}: {warnings[0].Message}"
            : $"{lead} ({warnings.Count.ToString(CultureInfo.InvariantCulture)}):\n  " + string.Join("\n  ", warnings.Select(w => w.Message));
    }
}

/// <summary>
/// Counts NaN and infinite values in data the engine has just read, vectorised: one pass that only tests "exponent all
/// ones" (NaN or Inf) and, in the rare case it finds any, a scalar pass that tells them apart.
/// </summary>
internal static class NonFiniteCount
{
    private const uint Float32Exponent = 0x7F80_0000;
    private const uint Float32Mantissa = 0x007F_FFFF;
    private const ushort BFloat16Exponent = 0x7F80;
    private const ushort BFloat16Mantissa = 0x007F;

    public static (long Nan, long Inf) Float32(ReadOnlySpan<float> values)
    {
        var bits = MemoryMarshal.Cast<float, uint>(values);
        return AnyAllOnes(bits, Float32Exponent) ? Split(bits, Float32Exponent, Float32Mantissa) : default;
    }

    public static (long Nan, long Inf) BFloat16(ReadOnlySpan<ushort> bits) =>
        AnyAllOnes(bits, BFloat16Exponent) ? Split(bits, BFloat16Exponent, BFloat16Mantissa) : default;

    // Compiled optimized from the first call: every input block of a merge passes through this loop.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static bool AnyAllOnes<T>(ReadOnlySpan<T> bits, T exponent)
        where T : unmanaged, IBinaryInteger<T>
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated && bits.Length >= Vector<T>.Count)
        {
            var mask = new Vector<T>(exponent);
            var hits = Vector<T>.Zero;
            var vectors = MemoryMarshal.Cast<T, Vector<T>>(bits);
            foreach (var v in vectors)
            {
                hits |= Vector.Equals(v & mask, mask);
            }
            if (hits != Vector<T>.Zero)
            {
                return true;
            }
            i = vectors.Length * Vector<T>.Count;
        }
        for (; i < bits.Length; i++)
        {
            if ((bits[i] & exponent) == exponent)
            {
                return true;
            }
        }
        return false;
    }

    private static (long Nan, long Inf) Split<T>(ReadOnlySpan<T> bits, T exponent, T mantissa)
        where T : unmanaged, IBinaryInteger<T>
    {
        long nan = 0, inf = 0;
        foreach (var b in bits)
        {
            if ((b & exponent) == exponent)
            {
                if ((b & mantissa) == T.Zero)
                {
                    inf++;
                }
                else
                {
                    nan++;
                }
            }
        }
        return (nan, inf);
    }
}

/// <summary>
/// NaN and Inf counts per (tensor, input) over a merge, added to by every worker as it reads. With strict checks the
/// first input block that holds any stops the merge.
/// </summary>
internal sealed class NonFiniteTally
{
    private readonly ConcurrentDictionary<(int Job, int Slot), (long Nan, long Inf)> _counts = new();

    /// <param name="strict">Throw at the first non-finite value instead of counting.</param>
    public NonFiniteTally(bool strict) => Strict = strict;

    public bool Strict { get; }

    /// <summary>Adds what one read of <paramref name="job"/>'s input <paramref name="slot"/> found.</summary>
    public void Add(MergeJob job, int slot, long nan, long inf)
    {
        if (nan == 0 && inf == 0)
        {
            return;
        }
        var total = _counts.AddOrUpdate((job.Index, slot), (nan, inf), (_, c) => (c.Nan + nan, c.Inf + inf));
        if (Strict)
        {
            throw new MergeDataException([MergeDataWarning.NonFinite(job.Name, job.InputNames[slot], total.Nan, total.Inf, partial: true)]);
        }
    }

    /// <summary>One warning per tensor and input that held any, in tensor order, then input order.</summary>
    public IReadOnlyList<MergeDataWarning> Warnings(IReadOnlyList<MergeJob> jobs) =>
        [.. _counts.OrderBy(kv => kv.Key.Job).ThenBy(kv => kv.Key.Slot)
            .Select(kv => MergeDataWarning.NonFinite(jobs[kv.Key.Job].Name, jobs[kv.Key.Job].InputNames[kv.Key.Slot], kv.Value.Nan, kv.Value.Inf, partial: false))];
}
