using System.Text.RegularExpressions;

namespace SensMerging.Registry.Storage;

/// <summary>
/// The temporary output folder a merge names in <see cref="MergeRecord.PartialFolder"/>: removed when the registry closes
/// the record of a merge whose process ended, so a killed merge leaves nothing behind. Only a folder named like the
/// engine's temporary folders (<c>&lt;out&gt;.partial-&lt;12 hex digits&gt;</c>, SensMerging.Core's MergedModelWriter) is
/// ever removed.
/// </summary>
internal static partial class PartialFolders
{
    /// <summary>Removes <paramref name="folder"/> and says what happened, as the end of the record's error message.</summary>
    public static string Remove(string folder)
    {
        if (!Path.IsPathFullyQualified(folder) || !WorkFolderName().IsMatch(Path.GetFileName(Path.TrimEndingDirectorySeparator(folder))))
        {
            return $"; its recorded partial output folder '{folder}' is not named like one ('<out>.partial-<12 hex digits>') and was left alone";
        }
        if (!Directory.Exists(folder))
        {
            return $"; its partial output folder '{folder}' was not there";
        }
        try
        {
            Directory.Delete(folder, recursive: true);
            return $"; its partial output folder '{folder}' was removed";
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"; its partial output folder '{folder}' could not be removed: {ex.Message}";
        }
    }

    [GeneratedRegex(@"\.partial-[0-9a-f]{12}$", RegexOptions.CultureInvariant)]
    private static partial Regex WorkFolderName();
}
