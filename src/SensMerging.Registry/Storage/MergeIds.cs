using System.Globalization;
using System.Security.Cryptography;

namespace SensMerging.Registry.Storage;

/// <summary>Merge ids: <c>m-yyyyMMdd-HHmmss-xxxxxx</c> (UTC time, then 6 random hex digits); they sort by creation time.</summary>
internal static class MergeIds
{
    public static string New(DateTime createdAtUtc)
    {
        Span<byte> random = stackalloc byte[3];
        RandomNumberGenerator.Fill(random);
        return "m-" + createdAtUtc.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(random);
    }

    public static void Validate(string id)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        if (id.Length > 100 || id.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
        {
            throw new ArgumentException($"merge id '{id}' is not valid: at most 100 characters, no spaces or control characters", nameof(id));
        }
    }
}
