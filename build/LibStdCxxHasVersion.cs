using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

// Reports whether the libstdc++.so.6 the dynamic loader would pick defines a symbol version
// (for example GLIBCXX_3.4.32). Reads the library's bytes; runs nothing.
public class SensMergingLibStdCxxHasVersion : Task
{
    [Required] public string VersionName { get; set; } = "";
    [Output] public bool HasVersion { get; set; }
    [Output] public string LibraryPath { get; set; } = "";

    public override bool Execute()
    {
        string[] dirs =
        {
            "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
            "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib",
        };
        foreach (var dir in dirs)
        {
            var path = Path.Combine(dir, "libstdc++.so.6");
            if (!File.Exists(path)) continue;
            LibraryPath = path;
            var needle = Encoding.ASCII.GetBytes(VersionName + "\0");
            var bytes = File.ReadAllBytes(path);
            HasVersion = IndexOf(bytes, needle) >= 0;
            Log.LogMessage(MessageImportance.Low, $"{path}: {VersionName} {(HasVersion ? "present" : "absent")}");
            return true;
        }
        // No system libstdc++ found where we look: assume the loader finds a suitable one.
        HasVersion = true;
        LibraryPath = "libstdc++.so.6";
        return true;
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }
}
