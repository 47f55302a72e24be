using SensMerging.Core.Engine;
using SensMerging.Registry;

namespace SensMerging.Host.Merging;

/// <summary>The engine's data warnings as the registry records them.</summary>
public static class RecordedWarnings
{
    public static IReadOnlyList<MergeWarning> From(IReadOnlyList<MergeDataWarning> warnings)
    {
        ArgumentNullException.ThrowIfNull(warnings);
        return [.. warnings.Select(w => new MergeWarning(Kind(w.Problem), w.Message)
        {
            Model = w.Model,
            Tensors = w.Tensors,
            NanCount = w.NanCount,
            InfCount = w.InfCount,
        })];
    }

    private static string Kind(MergeDataProblem problem) => problem switch
    {
        MergeDataProblem.NonFinite => MergeWarningKinds.NonFinite,
        MergeDataProblem.ExtraTensors => MergeWarningKinds.ExtraTensors,
        _ => throw new ArgumentOutOfRangeException(nameof(problem), problem, "unknown data problem"),
    };
}
